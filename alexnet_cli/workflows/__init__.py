"""Jobs that run several layers in sequence (the demo: prepare → train → eval → filters → report)."""
