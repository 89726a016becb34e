import sys

from olive_bf16_pass.entry import main

sys.exit(main())
