"""The chains afx-lightning ships, registered through the same entry points a third-party package uses."""
