from accounts_svc.main import main

main()
