"""``python -m haproxy_reload_handler`` (and the zipapp's entry point: see container/build-reload-handler)."""

import sys

from haproxy_reload_handler.cli import main

if __name__ == "__main__":
    sys.exit(main())
