import os
import sys

# train_full.py is a single file at the repository root, imported by the tests as a module.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Hypothesis fails a test whose example takes over 200 ms; on a loaded 2-core machine a numpy call can, once.
# The properties are what the tests check, not their speed.
from hypothesis import settings

settings.register_profile("no_deadline", deadline=None)
settings.load_profile("no_deadline")
