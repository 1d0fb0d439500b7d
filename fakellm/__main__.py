"""Allow `python -m fakellm`."""

from fakellm.cli import main

raise SystemExit(main())
