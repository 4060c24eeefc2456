"""The linker service: see DESIGN.md section 1 and protos/concord/v1/linker.proto."""
