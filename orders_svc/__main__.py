from orders_svc.main import main

main()
