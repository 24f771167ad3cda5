"""The AMQP side: topology, CloudEvents codec, confirmed publishing, dead-lettering."""
