"""An example third-party package: one chain and one recipe, registered only through entry points."""

from pathlib import Path

RECIPE = Path(__file__).with_name("tilt_drive.yaml")
