# A global file in HCL (--global-config defaults.hcl): defaults for every
# container, and the dedup settings.
defaults {
  onboot = true
  cpu    { units = 1000 }
  network { nameservers = "inherit" }
  stop_timeout = "60s"
}

dedup {
  enabled        = true
  schedule       = "@every 1h"
  min_size       = "4K"
  max_size       = "256M"
  min_containers = 2
  dirs           = ["bin", "lib", "lib64", "sbin", "usr", "opt", "etc"]
  cache_size     = "4G"
}
