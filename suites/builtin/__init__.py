"""Built-in suites; every module here is imported when the suite registry is first used."""
