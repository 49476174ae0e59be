import sys

from envoy_config.config import main

sys.exit(main())
