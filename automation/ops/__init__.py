"""The command line and what ops run with it: the demo, status and inspect, import, worker processes."""
