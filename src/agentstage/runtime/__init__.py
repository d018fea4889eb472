"""The run service: the one place runs are scheduled, recorded and streamed."""
