"""Running one scenario against a target: options, process guard, deadlines, the run."""
