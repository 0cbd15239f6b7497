"""The Responses API on inferd's core: translated onto chat completions, stored responses,
and background responses run as durable jobs."""

# The job endpoint of background responses (submitted by this package only).
RESPONSES = "/v1/responses"
