"""How a service process is assembled: pools, broker, inline projections, health, serving."""
