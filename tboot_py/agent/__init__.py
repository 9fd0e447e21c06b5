"""The push agent (``tboot-py agent``): enrolls with the service and attests on an interval."""
