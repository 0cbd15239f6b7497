"""The Responses API on inferd's core: translated onto chat completions, stored responses,
and background responses run as durable jobs."""
