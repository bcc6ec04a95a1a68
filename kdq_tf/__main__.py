"""`python -m kdq_tf` -> the CLI."""

import sys

from kdq_tf.cli import main

sys.exit(main())
