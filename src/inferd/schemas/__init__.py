"""Wire models: the requests inferd accepts and the answers the OpenAPI document describes."""
