import sys

from tq_cloud.cli import main

sys.exit(main())
