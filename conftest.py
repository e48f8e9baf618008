import os

# Tests run with local defaults: a generated secret key under var/.
os.environ.setdefault("DEBUG", "true")
