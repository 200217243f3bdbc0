"""Tools over the plugins that are not plugins themselves: the occlusion preview sheet."""
