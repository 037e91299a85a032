"""The console entry point: dispatches ``monitor probe`` before anything heavy is imported."""

from __future__ import annotations

import sys


def main() -> int:
    # keepalived runs the probe every two seconds: it must not pay for argparse trees, kubernetes or jinja2.
    if sys.argv[1:2] == ["probe"]:
        from monitor.probe import main as probe_main

        return probe_main(sys.argv[2:])
    from monitor.cli import main as cli_main

    return cli_main()
