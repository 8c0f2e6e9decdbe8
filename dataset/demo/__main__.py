"""`python -m dataset.demo`: write the demo corpus files and print what is in them (see corpus.py)."""
import sys

from .corpus import main

sys.exit(main())
