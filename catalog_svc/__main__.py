from catalog_svc.main import main

main()
