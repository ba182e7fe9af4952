"""The trust suite's parts: data readers, metric math and one module per dimension."""
