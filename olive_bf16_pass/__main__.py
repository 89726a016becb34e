import sys

from olive_bf16_pass.cli import main

sys.exit(main())
