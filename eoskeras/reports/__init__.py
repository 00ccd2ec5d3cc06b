"""Reports: plots and terminal rendering from run-directory files alone."""
