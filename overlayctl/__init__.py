"""overlayctl: the command line and the client library (``overlayctl.client``) for overlayd.

Kept empty on purpose: health checks import ``overlayctl.client``, which loads this package
first, so nothing heavy (typer, tabulate) may be imported here.
"""
