"""The generator service: see DESIGN.md section 1 and protos/concord/v1/generator.proto."""
