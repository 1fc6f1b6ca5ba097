"""The handlers service: runs operators' event handlers and client-callable tasks from folders."""
