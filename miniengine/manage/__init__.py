"""AiiDA's ``aiida.manage`` spelling of miniengine's settings (``miniengine.manage.caching``)."""
