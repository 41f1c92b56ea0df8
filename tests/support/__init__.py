"""What the tests share: requests for the tiny set, MP4 reading, stand-in models, free ports."""
