"""`make dist`: the one archive extracted at / of any image (see build.py for its layout)."""
