"""Data: split files, the video index, clip loading, and the embedded synthetic benchmark."""
