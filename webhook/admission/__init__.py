"""AdmissionReview in and out: decoding a review, the decision types, patches and responses, and the JSON codec."""
