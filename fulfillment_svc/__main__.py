from fulfillment_svc.main import main

main()
