"""The Trainyard services: dataset, scheduler and trainer, each its own gRPC server."""
