import sys

from storefront_cli.main import main

sys.exit(main())
