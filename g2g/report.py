"""``python -m g2g.report``: the sweep report or the results page (see
:mod:`g2g.reporting.sweep_report`)."""

from g2g.reporting.sweep_report import main

if __name__ == "__main__":
    raise SystemExit(main())
