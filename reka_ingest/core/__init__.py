"""What every other room stands on: settings, named constants, the exception root,
the states and reasons, logging, and the helpers for the processes we start."""
