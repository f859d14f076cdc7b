"""The local runtime: AWS emulated on one machine (moto's server), with our own stand-ins for
what moto does not run: the Lambda event source mapping, the sweeper's schedule and the
one-time timeout schedules."""
