import sys

from xmtc.cli import run

if __name__ == "__main__":
    sys.exit(run())
