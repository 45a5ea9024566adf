"""What places an image besides a face: instance appearance, seeds, video links, review decisions."""
