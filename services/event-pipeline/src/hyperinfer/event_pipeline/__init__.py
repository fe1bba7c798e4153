"""HyperInfer event-pipeline: Durable priority job queues, workers, retries, dead-letter queue."""
