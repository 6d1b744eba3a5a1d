"""The AWS side: EC2 facts behind the nodes (read batched, cached), and which ENI carries which network."""
