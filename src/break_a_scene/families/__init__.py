"""Model families: each module holds one (see `base.ModelFamily`); they are found by importing every module here."""
