"""`python -m lic_utils …`: the study's command line (see lic_utils.cli)."""
import sys

from lic_utils.cli import main

sys.exit(main())
