"""What a recipient controls from the signed link in every campaign mail: unsubscribing, their lists, their data."""
