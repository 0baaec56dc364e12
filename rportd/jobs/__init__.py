"""Commands and scripts on clients: jobs, multi-client jobs, live output."""
