"""The scheduler: training jobs, flavors, queues, duration limits, events, model versions."""
