"""Durable jobs: every async request is a row before it is acknowledged.

``service.JobService`` accepts, lists, cancels and streams jobs; ``queue`` is the narrow seam
the workers pull job ids from (in-process here, a broker later); ``worker.WorkerPool`` claims a
job with a lease, runs it through ``Inference`` and stores its result once; ``webhooks`` signs
and delivers completion notices; ``maintenance`` re-enqueues lost jobs and enforces retention;
``batches`` runs the OpenAI Batch API on top of all of it.
"""
