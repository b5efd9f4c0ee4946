import os
import sys

# train_full.py is a single file at the repository root, imported by the tests as a module.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
