"""The encoder service: see DESIGN.md section 1 and protos/concord/v1/encoder.proto."""
