"""Pure-torch model code shared by services (image/text towers, dual encoder, losses); no I/O."""
